"""Run fingerprints (medclass.runs): which differences stop a resume, and which are only a newer medclass."""

from types import SimpleNamespace

from medclass.runs import fingerprint, fingerprint_diff

DATA = SimpleNamespace(label_names=["Pneumonia"], task="multilabel",
                       splits={"training": [{"image": "a.png", "label": [1.0]}], "validation": [], "test": []})
SETTINGS = {"arch": "resnet18", "learning_rate": 0.001, "seed": 0, "num_workers": 4}


def test_same_run_and_a_changed_setting():
    saved = fingerprint(DATA, SETTINGS)
    assert fingerprint_diff(saved, fingerprint(DATA, {**SETTINGS, "num_workers": 0})) == []  # speed only
    assert fingerprint_diff(saved, fingerprint(DATA, {**SETTINGS, "learning_rate": 0.01})) == [
        "learning_rate: 0.001 in the saved run, 0.01 now"]


def test_a_setting_added_after_the_run_was_saved_resumes_at_its_old_behaviour():
    """A last.pt from before the ViT settings existed: resumed when they have the value that did what medclass did
    then, refused when one is set to something else."""
    saved = fingerprint(DATA, SETTINGS)
    vit_defaults = {"patch_size": "auto", "hidden_size": None, "num_heads": None, "num_layers": None}
    assert fingerprint_diff(saved, fingerprint(DATA, {**SETTINGS, **vit_defaults})) == []
    assert fingerprint_diff(saved, fingerprint(DATA, {**SETTINGS, **vit_defaults, "hidden_size": 192})) == [
        'hidden_size: "(not set)" in the saved run, 192 now']
    # a key unknown to ADDED_SETTINGS, absent from the saved run, is a difference
    assert fingerprint_diff(saved, fingerprint(DATA, {**SETTINGS, "new_knob": None})) == [
        'new_knob: "(not set)" in the saved run, null now']


def test_a_config_syntax_error_is_a_user_mistake_naming_the_file_and_line(tmp_path):
    """A YAML syntax error in a bundle config ends in the short paragraph as the user's mistake, not as a bug."""
    import yaml

    from medclass.errors import user_message

    bad = tmp_path / "train.yaml"
    bad.write_text("max_epochs: 3\nbad: [unclosed\n")
    try:
        with open(bad) as f:
            yaml.safe_load(f)
    except yaml.YAMLError as exc:
        wrapped = RuntimeError("MONAI could not read the config")
        wrapped.__cause__ = exc
        text = user_message(wrapped, log_file=None, debug_hint=False)
    assert text.startswith("medclass: error: a config file is not valid YAML:")
    assert f'"{bad}", line 3' in text and "bug" not in text
