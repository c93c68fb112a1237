import pytest
import torch

from microgpt.config import ModelConfig, UsageError
from microgpt.data import Tokenizer, eval_batches, load_words, pack, pad, resolve_data_path, split_words
from microgpt.model import GPT, init_weights


def test_splits_are_makemores(names_data):
    assert (len(names_data.train), len(names_data.val), len(names_data.test)) == (30033, 1000, 1000)
    assert names_data.test[:5] == ["kalub", "shaima", "sthefany", "jakyri", "emanuella"]
    assert sum(len(w) + 1 for w in names_data.test) == 7166  # docs/protocol.md: test predictions
    assert names_data.tokenizer.vocab_size == 27 and names_data.tokenizer.bos == 26
    assert names_data.max_len == 15


def test_split_seed_changes_the_split(names_path):
    words = load_words(names_path)
    _, _, test_a = split_words(words, 3407)
    _, _, test_b = split_words(words, 1)
    assert len(test_b) == 1000 and test_a != test_b


def test_splits_partition_the_data():
    words = [f"w{i}" for i in range(57)]
    train, val, test = split_words(words, 0)
    assert (len(train), len(val), len(test)) == (47, 5, 5)
    assert sorted(train + val + test) == sorted(words)


def test_tokenizer_frames_with_bos():
    tok = Tokenizer.from_words(["emma", "bob"])
    assert tok.chars == ("a", "b", "e", "m", "o") and tok.bos == 5
    assert tok.decode(tok.encode("emma")) == "emma"


def test_pack_has_no_padding_beyond_row_tails():
    seqs = [[0] * n for n in (1, 2, 3, 4, 5, 6, 7)]
    batch = pack(seqs, bos=9, width=8)
    assert batch.n_tokens == sum(n + 1 for n in (1, 2, 3, 4, 5, 6, 7)) == int((batch.targets != -1).sum())
    assert batch.idx.shape[1] == 8 and batch.idx.shape[0] == 5  # 35 tokens into rows of 8: 5 rows, 5 pad slots
    one = pack([[1, 2, 3]], bos=9)
    assert one.mask is None and one.idx.tolist() == [[9, 1, 2, 3]] and one.targets.tolist() == [[1, 2, 3, 9]]


def test_packed_rows_equal_names_alone():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=6, block_size=8, n_embd=8, n_head=2, n_layer=2)
    model = GPT(cfg).double()
    init_weights(model, torch.Generator().manual_seed(0))
    seqs = [[1, 2, 3], [4], [0, 1, 2, 3, 4, 0, 1], [2, 2]]
    batch = pack(seqs, bos=5, width=8)
    logits, loss = model(batch.idx, batch.targets, batch.pos, batch.mask)
    total = 0.0
    for s in seqs:
        alone = pack([s], bos=5)
        _, l_alone = model(alone.idx, alone.targets)
        total += l_alone.item() * alone.n_tokens
    assert loss.item() == pytest.approx(total / batch.n_tokens, rel=1e-12)
    padded = pad(seqs, bos=5)
    assert padded.n_tokens == batch.n_tokens and padded.idx.numel() > batch.idx.numel()
    assert model(padded.idx, padded.targets, padded.pos, padded.mask)[1].item() == pytest.approx(loss.item(), rel=1e-12)


def test_eval_batches_cover_every_prediction():
    tok = Tokenizer.from_words(["ab", "abc", "c"])
    batches = eval_batches(["ab", "abc", "c"] * 5, tok, names_per_batch=4)
    assert sum(b.n_tokens for b in batches) == 5 * (3 + 4 + 2)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty or whitespace-only"),
        (b"  \n\t\n \n", "empty or whitespace-only"),
        (b"anna\n\xff\xfebob\n", "not UTF-8"),
        (b"anna\nbo\x00b\n", "NUL byte on line 2"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_words(path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_words(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="is a directory"):
        load_words(tmp_path)


def test_too_few_examples():
    with pytest.raises(UsageError, match="at least 10 examples"):
        split_words(["a", "b", "c"])


def test_data_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROGPT_DATA", str(tmp_path / "env.txt"))
    assert resolve_data_path(tmp_path / "flag.txt") == tmp_path / "flag.txt"
    assert resolve_data_path(None) == tmp_path / "env.txt"
    monkeypatch.delenv("MICROGPT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="MICROGPT_DATA"):
        resolve_data_path(None, download=False)


def test_unreachable_download_is_one_line(tmp_path, monkeypatch):
    import microgpt.data as data

    monkeypatch.delenv("MICROGPT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "NAMES_URL", "http://127.0.0.1:9/names.txt")  # discard port: refused at once
    with pytest.raises(UsageError) as err:
        resolve_data_path(None)
    assert "--data PATH" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "microgpt" / "names.txt").exists()


def test_download_is_verified_and_atomic(tmp_path, monkeypatch):
    import hashlib
    import microgpt.data as data

    payload = b"anna\nbob\n"
    src = tmp_path / "src.txt"
    src.write_bytes(payload)
    dest = tmp_path / "cache" / "names.txt"
    with pytest.raises(ValueError, match="sha256"):
        data._download(src.as_uri(), dest, "0" * 64)
    assert not dest.exists()
    data._download(src.as_uri(), dest, hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload and [p.name for p in dest.parent.iterdir()] == ["names.txt"]
