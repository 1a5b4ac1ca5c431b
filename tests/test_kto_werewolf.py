"""KTO on werewolf end to end: the learner plays both werewolf seats against the rule-based village, the preference
trainer labels its decisions by outcome and updates the LoRA weights (scenarios/campaigns/werewolf_kto.yaml)."""

from __future__ import annotations

from pathlib import Path

FILE = Path(__file__).resolve().parent.parent / "scenarios" / "campaigns" / "werewolf_kto.yaml"


def test_the_werewolf_kto_campaign_labels_the_wolves_decisions_and_trains(tmp_path, tracking_uri, tiny_model_dir):
    from safetensors.torch import load_file

    from agora.campaign import load_campaign
    from mlflow import MlflowClient

    changes = {
        "learner.model": tiny_model_dir,
        "learner.max_new_tokens": 12,
        "iterations": 1,
        "groups_per_iteration": 2,
        "group_size": 4,
        "evaluation.episodes": 1,
        "checkpoint.dir": str(tmp_path / "ck"),
    }
    result = load_campaign(FILE, changes).run()
    client = MlflowClient(tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    labels = client.get_metric_history(result.run_id, "train/labels")
    steps = client.get_metric_history(result.run_id, "train/optimizer_steps")
    # the seeded games of a group end differently, so some decisions are labelled and trained on
    assert labels[0].value > 0 and steps[0].value == -(-labels[0].value // 16)
    adapter = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
