import pytest

from sslab.core.config import ConfigError, ExperimentConfig, from_dict, load_experiment, parse_override, to_dict


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("name: x\nmodality: vector\ntrain: {steps: 10, batch_size: 4}\noptim: {betas: [0.9, 0.99]}\n")
    cfg = load_experiment(f, ["train.steps=20", "optim.lr=3e-4", "data.source=digits", "optim.betas=[0.8,0.9]"])
    assert cfg.train.steps == 20 and cfg.train.batch_size == 4
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.data == {"source": "digits"}


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.stpes'.*valid keys in train"):
        load_experiment(None, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="unknown config key 'modalty'"):
        from_dict(ExperimentConfig, {"modalty": "ecg"})


@pytest.mark.parametrize("override,msg", [
    ("train.steps=ten", r"train\.steps: expected an integer"),
    ("train.compile=3", r"train\.compile: expected true/false"),
    ("optim.lr=fast", r"optim\.lr: expected a number"),
    ("optim.betas=[0.9]", r"optim\.betas: expected 2 values"),
    ("train=5", r"train: expected a mapping"),
])
def test_wrong_types_are_named(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_experiment(None, [override])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("train..steps=3")


def test_round_trip_to_dict():
    cfg = load_experiment(None, ["train.steps=7", "encoder.name=mlp"])
    again = from_dict(ExperimentConfig, to_dict(cfg))
    assert again == cfg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
