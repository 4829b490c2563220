"""The GPU check script runs its whole sequence (bundle preparation, the tokenizer with Llama 3's special ids,
QLoRA through the job, serving with the adapter and one pipeline answer) on tiny shapes on the CPU, so the
script a GPU machine runs is known to work before one is at hand."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path, tiny_index, fixture_data):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(fixture_data, data)
    (data / "chatdoctor").mkdir()
    (data / "chatdoctor" / "GenMedGPT-5k.json").write_text(json.dumps([
        {"instruction": "patient", "input": f"I have had a cough for {i} days, what should I do?",
         "output": f"A cough lasting {i} days is usually viral. Rest, fluids and honey help."} for i in range(30)]))
    (data / "wikidoc").mkdir(exist_ok=True)
    shutil.copy(data / "wikidoc" / "wd.json", data / "wikidoc" / "medical_meadow_wikidoc_patient_information.json")
    (data / "splits").mkdir()
    (data / "splits" / "medquad_reserved_documents.txt").write_text("2:0000004\n")
    env = {**os.environ, "MEDCITE_GPU_BUNDLE": str(tmp_path / "bundle"), "CUDA_VISIBLE_DEVICES": ""}
    script = str(ROOT / "benchmarks" / "gpu_check.py")
    prep = subprocess.run([sys.executable, script, "--prepare", "--index", str(tiny_index), "--size", "24",
                           "--data-dir", str(data)], env=env, capture_output=True, text=True, timeout=600)
    assert prep.returncode == 0, prep.stderr[-2000:]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "bundle" / "tokenizer")
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 128009 and len(tok) == 128256
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, script, "--tiny", "--out", str(out)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["card"] == "cpu" and result["finetune"]["adapter_mib"] > 0
    assert {"4bit", "bf16"} == set(result["serve"]) and all(v["tokens"] > 0 for v in result["serve"].values())
