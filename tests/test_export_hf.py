"""export_hf.py: a checkpoint becomes a folder that Hugging Face `transformers` loads with nothing from this repo,
and gives the same logits, the same greedy text and the same token ids."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the export's tests load it with transformers: pip install -r "
                                           "requirements-dev.txt")

import export_hf  # noqa: E402
import generate  # noqa: E402
import train  # noqa: E402
from checkpoint import load_model  # noqa: E402
from conftest import TINY_TEXT, assert_clean_error, run  # noqa: E402

POEM = "静夜思\n李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
SAMPLE = "ROMEO:\nI will go, sir.\n\nJULIET:\n'Tis but thy name that is my enemy; 🙂\n"
TOY = ["--n_embd", "32", "--num_heads", "2", "--n_layer", "2", "--block_size", "256", "--batch_size", "4",
       "--max_iters", "150", "--eval_interval", "150", "--eval_iters", "1", "--time_budget", "0", "--sample_tokens", "0",
       "--device", "cpu"]

# What a user of the folder does, in a fresh interpreter that can't see this repo (-I: no script folder on the path).
HF_SIDE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
folders, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {}
for folder in folders:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = {"class": type(model).__name__, "ids": [tokenizer(t)["input_ids"] for t in texts],
           "decoded": [tokenizer.decode(tokenizer(t)["input_ids"]) for t in texts]}
    with torch.no_grad():
        out["logits"] = [model(torch.tensor([tokenizer(t)["input_ids"]])).logits[0].tolist() for t in texts]
        prompt = torch.tensor([tokenizer("ROMEO:")["input_ids"]])
        greedy = model.generate(prompt, max_new_tokens=200, do_sample=False)
        out["greedy"] = tokenizer.decode(greedy[0])
        try:  # past the context the model learned (its n_positions)
            context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
            model.generate(prompt, max_new_tokens=context, do_sample=False)
            out["past_context"] = "no error"
        except IndexError as e:
            out["past_context"] = "IndexError"
    out["pipeline"] = pipeline("text-generation", model=folder)("ROMEO:", max_new_tokens=20)[0]["generated_text"]
    results[folder] = out
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A toy model trained on Shakespeare and poems (so its vocabulary has both), and its export."""
    folder = tmp_path_factory.mktemp("export")
    data = folder / "mixed.txt"
    data.write_text(TINY_TEXT + POEM * 20 + SAMPLE, encoding="utf-8")
    for name, options in (("out", []), ("out-rope", ["--position", "rope"]),  # GPT-2's and GPT-NeoX's
                          ("out-bpe", ["--tokenizer", "bpe", "--vocab_size", "400"])):  # and a BPE tokenizer
        assert run(train, "--data", data, "--out_dir", folder / name, *TOY, *options) == 0
        assert run(export_hf, "--checkpoint", folder / name / "ckpt.pt", "--out", folder / name.replace("out", "hf")) == 0
    return folder


TEXTS = [SAMPLE, POEM]


@pytest.fixture(scope="module")
def hf_side(exported):
    """What transformers makes of each export, all three read in one fresh interpreter (it takes seconds to start)."""
    folders = [str(exported / name) for name in ("hf", "hf-rope", "hf-bpe")]
    result = subprocess.run([sys.executable, "-I", "-c", HF_SIDE, json.dumps(folders), json.dumps(TEXTS)],
                            cwd=exported, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return {Path(folder).name: value for folder, value in out.items()}


@pytest.mark.parametrize("name, architecture", [("", "GPT2LMHeadModel"), ("-rope", "GPTNeoXForCausalLM"),
                                                ("-bpe", "GPT2LMHeadModel")])
def test_transformers_loads_the_export_and_computes_what_the_model_does(exported, hf_side, capsys, name,
                                                                       architecture):
    texts = TEXTS
    hf = hf_side[f"hf{name}"]
    model, tokenizer = load_model(exported / f"out{name}" / "ckpt.pt")
    assert hf["class"] == architecture
    for text, ids, decoded, logits in zip(texts, hf["ids"], hf["decoded"], hf["logits"]):
        assert ids == tokenizer.encode(text)  # the same ids: English, Chinese, newlines, spaces, emoji
        assert decoded == text  # decoding inserts no spaces
        with torch.no_grad():
            ours, _ = model(torch.tensor([ids]))
        torch.testing.assert_close(torch.tensor(logits), ours[0], atol=1e-5, rtol=0)
    # Greedy: transformers' generate writes what generate.py --temperature 0 writes, 200 characters inside the
    # model's 256 positions; past them it has no position to look up.
    capsys.readouterr()
    assert run(generate, "--checkpoint", exported / f"out{name}" / "ckpt.pt", "--prompt", "ROMEO:", "--temperature",
               "0", "--max_new_tokens", "200", "--device", "cpu") == 0
    assert hf["greedy"] == capsys.readouterr().out[:-1]  # generate.py ends its sample with one print()
    assert len(set(hf["greedy"][6:])) >= 5  # a trained model's text, not one character over and over
    # Past the trained context GPT-2 has no position to look up; rotary positions go on (generate.py slides instead).
    assert hf["past_context"] == ("IndexError" if architecture == "GPT2LMHeadModel" else "no error")
    assert hf["pipeline"].startswith("ROMEO:") and len(hf["pipeline"]) > len("ROMEO:")


def test_the_folder_has_the_config_card_and_sampling_defaults(exported):
    hf = exported / "hf"
    config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["activation_function"] == "gelu"
    assert config["n_positions"] == 256 and config["n_layer"] == 2 and config["tie_word_embeddings"]
    generation = json.loads((hf / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["temperature"] == generate.parse_args([]).temperature and generation["top_k"] == 0
    card = (hf / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    ckpt = torch.load(exported / "out" / "ckpt.pt", weights_only=True)
    assert f"| training steps | {ckpt['step']} |" in card and f"{ckpt['full_val_loss']:.4f}" in card
    assert "python3 train.py --data " in card and "--max_iters 150" in card
    bpe_card = (exported / "hf-bpe" / "README.md").read_text(encoding="utf-8")
    bpe_ckpt = torch.load(exported / "out-bpe" / "ckpt.pt", weights_only=True)
    assert "- bpe\n" in bpe_card and "144 merges" in bpe_card and "--tokenizer bpe --vocab_size 400" in bpe_card
    assert f"{bpe_ckpt['full_val_bpc']:.3f} bits per character" in bpe_card


def test_a_re_export_replaces_an_export_but_never_another_folder(exported, tmp_path, capsys, monkeypatch):
    checkpoint = exported / "out" / "ckpt.pt"
    assert run(export_hf, "--checkpoint", checkpoint, "--out", exported / "hf") == 0  # an earlier export: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert_clean_error(run(export_hf, "--checkpoint", checkpoint, "--out", mine), capsys.readouterr().err,
                       "not an earlier export", "nothing was written")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError):
        export_hf.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "new")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no half-written folder, no leftovers


def test_a_model_with_no_exact_counterpart_is_one_line(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TINY_TEXT, encoding="utf-8")
    small = [*TOY, "--block_size", "16", "--max_iters", "2", "--eval_interval", "2"]
    assert run(train, "--data", data, "--out_dir", tmp_path / "rope", *small, "--position", "rope",
               "--qk_norm", "true") == 0
    capsys.readouterr()
    status = run(export_hf, "--checkpoint", tmp_path / "rope" / "ckpt.pt", "--out", tmp_path / "hf")
    assert_clean_error(status, capsys.readouterr().err, "can't be exported exactly", "GPTNeoXForCausalLM",
                       "--qk_norm true")
    assert not (tmp_path / "hf").exists()
    assert run(train, "--data", data, "--out_dir", tmp_path / "old", *small, "--head_bias", "true") == 0
    capsys.readouterr()
    status = run(export_hf, "--checkpoint", tmp_path / "old" / "ckpt.pt", "--out", tmp_path / "hf")
    assert_clean_error(status, capsys.readouterr().err, "a bias in the output layer")


def test_the_cards_example_is_the_models_own_kind_of_text(tmp_path, monkeypatch, capsys):
    # A poem model's card once generated from "ROMEO:": every character unknown, so transformers got no ids at all.
    data = tmp_path / "poems.txt"
    data.write_text(POEM * 60, encoding="utf-8")
    small = [*TOY, "--block_size", "16", "--max_iters", "2", "--eval_interval", "2"]
    assert run(train, "--data", data, "--out_dir", tmp_path / "out", *small) == 0
    capsys.readouterr()
    assert run(export_hf, "--checkpoint", tmp_path / "out" / "ckpt.pt", "--out", tmp_path / "hf") == 0
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    [prompt] = re.findall(r'generate\((".*?"), max_new_tokens', card)
    model, tokenizer = load_model(tmp_path / "out" / "ckpt.pt")
    assert json.loads(prompt) == "静夜思" and not tokenizer.unknown(json.loads(prompt))
    assert "characters)" in capsys.readouterr().out
    monkeypatch.setenv("MINIGPT_LANG", "zh")  # a BPE model's vocabulary is counted in tokens, not characters
    assert run(train, "--data", data, "--out_dir", tmp_path / "bpe", *small, "--tokenizer", "bpe",
               "--vocab_size", "260") == 0
    capsys.readouterr()
    assert run(export_hf, "--checkpoint", tmp_path / "bpe" / "ckpt.pt", "--out", tmp_path / "hf-bpe") == 0
    out = capsys.readouterr().out
    assert "260 个 BPE token" in out and "个字符" not in out
