"""Every key's refusal of a value out of its range or of the wrong type, as the one line the standards
promise (``key=value: what is allowed``, the key as the config spells it), and the refusals that tie two keys.
Written for the survivors of a mutation run of dynamics/config/schema.py (docs/testing.md): a key's name
misspelt or left out of its check, or the allowed values left out of the message, changed no test."""

from __future__ import annotations

import pytest

from dynamics import resolve_config
from dynamics.errors import ConfigError

REFUSED = [
    ('task.subjects', -5, 'task.subjects=-5: must be an integer >= 1'),
    ('task.subjects', 'abc', "task.subjects='abc': must be an integer"),
    ('task.subjects', 2.5, 'task.subjects=2.5: must be an integer'),
    ('task.relations', -5, 'task.relations=-5: must be an integer >= 1'),
    ('task.relations', 'abc', "task.relations='abc': must be an integer"),
    ('task.relations', 2.5, 'task.relations=2.5: must be an integer'),
    ('task.answers_per_relation', -5, 'task.answers_per_relation=-5: must be an integer >= 1'),
    ('task.answers_per_relation', 'abc', "task.answers_per_relation='abc': must be an integer"),
    ('task.answers_per_relation', 2.5, 'task.answers_per_relation=2.5: must be an integer'),
    ('task.noise_tokens', -5, 'task.noise_tokens=-5: must be an integer >= 0'),
    ('task.noise_tokens', 'abc', "task.noise_tokens='abc': must be an integer"),
    ('task.noise_tokens', 2.5, 'task.noise_tokens=2.5: must be an integer'),
    ('task.seq_len', -5, 'task.seq_len=-5: must be an integer >= 3'),
    ('task.seq_len', 'abc', "task.seq_len='abc': must be an integer"),
    ('task.seq_len', 2.5, 'task.seq_len=2.5: must be an integer'),
    ('task.facts', 'bogus_value', "task.facts='bogus_value': must be one of random, structured"),
    ('task.facts', 7, 'task.facts=7: must be a string'),
    ('task.subject_zipf', -5.0, 'task.subject_zipf=-5.0: must be a finite number >= 0'),
    ('task.subject_zipf', 'abc', "task.subject_zipf='abc': must be a number"),
    ('task.relation_zipf', -5.0, 'task.relation_zipf=-5.0: must be a finite number >= 0'),
    ('task.relation_zipf', 'abc', "task.relation_zipf='abc': must be a number"),
    ('task.seed', -5, 'task.seed=-5: must be an integer in [0, 2^63 - 1]'),
    ('task.seed', 'abc', "task.seed='abc': must be an integer"),
    ('task.seed', 2.5, 'task.seed=2.5: must be an integer'),
    ('model.kind', 'bogus_value', "model.kind='bogus_value': must be one of reduced, embedded, transformer"),
    ('model.kind', 7, 'model.kind=7: must be a string'),
    ('model.attention', 'bogus_value', "model.attention='bogus_value': must be one of linear, softmax"),
    ('model.attention', 7, 'model.attention=7: must be a string'),
    ('model.dim', -5, 'model.dim=-5: must be an integer >= 1'),
    ('model.dim', 'abc', "model.dim='abc': must be an integer"),
    ('model.dim', 2.5, 'model.dim=2.5: must be an integer'),
    ('model.embeddings', 'bogus_value',
     "model.embeddings='bogus_value': "
     'must be one of orthonormal, onehot, hadamard, gaussian'),
    ('model.embeddings', 7, 'model.embeddings=7: must be a string'),
    ('model.seed', -5, 'model.seed=-5: must be an integer in [0, 2^63 - 1]'),
    ('model.seed', 'abc', "model.seed='abc': must be an integer"),
    ('model.seed', 2.5, 'model.seed=2.5: must be an integer'),
    ('model.heads', -5, 'model.heads=-5: must be an integer >= 1'),
    ('model.heads', 'abc', "model.heads='abc': must be an integer"),
    ('model.heads', 2.5, 'model.heads=2.5: must be an integer'),
    ('model.head_dim', -5, 'model.head_dim=-5: must be an integer >= 1'),
    ('model.head_dim', 'abc', "model.head_dim='abc': must be an integer"),
    ('model.head_dim', 2.5, 'model.head_dim=2.5: must be an integer'),
    ('model.mlp_width', -5, 'model.mlp_width=-5: must be an integer >= 0'),
    ('model.mlp_width', 'abc', "model.mlp_width='abc': must be an integer"),
    ('model.mlp_width', 2.5, 'model.mlp_width=2.5: must be an integer'),
    ('init.kind', 'bogus_value', "init.kind='bogus_value': must be one of constant, gaussian, manifold"),
    ('init.kind', 7, 'init.kind=7: must be a string'),
    ('init.scale', -5.0, 'init.scale=-5.0: must be a finite number > 0'),
    ('init.scale', 'abc', "init.scale='abc': must be a number"),
    ('init.seed', -5, 'init.seed=-5: must be an integer in [0, 2^63 - 1]'),
    ('init.seed', 'abc', "init.seed='abc': must be an integer"),
    ('init.seed', 2.5, 'init.seed=2.5: must be an integer'),
    ('init.from_run', 7, 'init.from_run=7: must be a string'),
    ('init.alpha', -5.0, 'init.alpha=-5.0: must be a finite number > 0'),
    ('init.alpha', 'abc', "init.alpha='abc': must be a number"),
    ('init.beta', -5.0, 'init.beta=-5.0: must be a finite number > 0'),
    ('init.beta', 'abc', "init.beta='abc': must be a number"),
    ('loss.kind', 'bogus_value', "loss.kind='bogus_value': must be one of population, sampled"),
    ('loss.kind', 7, 'loss.kind=7: must be a string'),
    ('loss.samples', -5, 'loss.samples=-5: must be an integer >= 1'),
    ('loss.samples', 'abc', "loss.samples='abc': must be an integer"),
    ('loss.samples', 2.5, 'loss.samples=2.5: must be an integer'),
    ('loss.seed', -5, 'loss.seed=-5: must be an integer in [0, 2^63 - 1]'),
    ('loss.seed', 'abc', "loss.seed='abc': must be an integer"),
    ('loss.seed', 2.5, 'loss.seed=2.5: must be an integer'),
    ('flow.t_max', -5.0, 'flow.t_max=-5.0: must be a finite number > 0'),
    ('flow.t_max', 'abc', "flow.t_max='abc': must be a number"),
    ('flow.t_min', -5.0, 'flow.t_min=-5.0: must be a finite number > 0'),
    ('flow.t_min', 'abc', "flow.t_min='abc': must be a number"),
    ('flow.points', -5, 'flow.points=-5: must be an integer >= 2'),
    ('flow.points', 'abc', "flow.points='abc': must be an integer"),
    ('flow.points', 2.5, 'flow.points=2.5: must be an integer'),
    ('flow.rtol', -5.0, 'flow.rtol=-5.0: must be a finite number > 0'),
    ('flow.rtol', 'abc', "flow.rtol='abc': must be a number"),
    ('flow.atol', -5.0, 'flow.atol=-5.0: must be a finite number > 0'),
    ('flow.atol', 'abc', "flow.atol='abc': must be a number"),
    ('flow.first_step', -5.0, 'flow.first_step=-5.0: must be a finite number > 0'),
    ('flow.first_step', 'abc', "flow.first_step='abc': must be a number"),
    ('flow.max_steps', -5, 'flow.max_steps=-5: must be an integer >= 1'),
    ('flow.max_steps', 'abc', "flow.max_steps='abc': must be an integer"),
    ('flow.max_steps', 2.5, 'flow.max_steps=2.5: must be an integer'),
    ('flow.modified_lr', -5.0, 'flow.modified_lr=-5.0: must be a finite number >= 0'),
    ('flow.modified_lr', 'abc', "flow.modified_lr='abc': must be a number"),
    ('flow.jacobian', 'bogus_value', "flow.jacobian='bogus_value': must be one of difference, hvp, blocks"),
    ('flow.jacobian', 7, 'flow.jacobian=7: must be a string'),
    ('flow.geometry', 'bogus_value', "flow.geometry='bogus_value': must be one of euclidean, sign, spectral"),
    ('flow.geometry', 7, 'flow.geometry=7: must be a string'),
    ('flow.geometry_eps', -5.0, 'flow.geometry_eps=-5.0: must be a finite number >= 0'),
    ('flow.geometry_eps', 'abc', "flow.geometry_eps='abc': must be a number"),
    ('flow.newton_preconditioner', 'bogus_value',
     "flow.newton_preconditioner='bogus_value': "
     'must be one of none, blocks'),
    ('flow.newton_preconditioner', 7, 'flow.newton_preconditioner=7: must be a string'),
    ('train.optimizer', 'bogus_value',
     "train.optimizer='bogus_value': "
     'must be one of gd, sgd, adam, signsgd, muon'),
    ('train.optimizer', 7, 'train.optimizer=7: must be a string'),
    ('train.lr', -5.0, 'train.lr=-5.0: must be a finite number > 0'),
    ('train.lr', 'abc', "train.lr='abc': must be a number"),
    ('train.batch_size', -5, 'train.batch_size=-5: must be an integer >= 1'),
    ('train.batch_size', 'abc', "train.batch_size='abc': must be an integer"),
    ('train.batch_size', 2.5, 'train.batch_size=2.5: must be an integer'),
    ('train.steps', -5, 'train.steps=-5: must be an integer >= 1'),
    ('train.steps', 'abc', "train.steps='abc': must be an integer"),
    ('train.steps', 2.5, 'train.steps=2.5: must be an integer'),
    ('train.seed', -5, 'train.seed=-5: must be an integer in [0, 2^63 - 1]'),
    ('train.seed', 'abc', "train.seed='abc': must be an integer"),
    ('train.seed', 2.5, 'train.seed=2.5: must be an integer'),
    ('train.beta1', -5.0, 'train.beta1=-5.0: must be a number in [0, 1)'),
    ('train.beta1', 'abc', "train.beta1='abc': must be a number"),
    ('train.beta2', -5.0, 'train.beta2=-5.0: must be a number in [0, 1)'),
    ('train.beta2', 'abc', "train.beta2='abc': must be a number"),
    ('train.eps', -5.0, 'train.eps=-5.0: must be a finite number > 0'),
    ('train.eps', 'abc', "train.eps='abc': must be a number"),
    ('train.momentum', -5.0, 'train.momentum=-5.0: must be a number in [0, 1)'),
    ('train.momentum', 'abc', "train.momentum='abc': must be a number"),
    ('data.holdout', -5, 'data.holdout=-5: must be an integer >= 0'),
    ('data.holdout', 'abc', "data.holdout='abc': must be an integer"),
    ('data.holdout', 2.5, 'data.holdout=2.5: must be an integer'),
    ('data.warmup_subjects', -5.0, 'data.warmup_subjects=-5.0: must be a number in (0, 1]'),
    ('data.warmup_subjects', 'abc', "data.warmup_subjects='abc': must be a number"),
    ('data.warmup_time', -5.0, 'data.warmup_time=-5.0: must be a finite number >= 0'),
    ('data.warmup_time', 'abc', "data.warmup_time='abc': must be a number"),
    ('data.zipf', -5, 'data.zipf=-5.0: must be a finite number >= 0'),
    ('data.zipf_end', -5, 'data.zipf_end=-5.0: must be a finite number >= 0'),
    ('data.replay', -5.0, 'data.replay=-5.0: must be a number in [0, 1)'),
    ('data.replay', 'abc', "data.replay='abc': must be a number"),
    ('data.freeze', 7, 'data.freeze=7: must be a string'),
    ('device', 'bogus_value', "device='bogus_value': must be cpu or cuda[:N]"),
    ('device', 7, 'device=7: must be a string'),
]


@pytest.mark.parametrize(("key", "value", "message"), REFUSED)
def test_a_value_out_of_range_or_of_the_wrong_type_is_refused_in_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as refused:
        resolve_config("tiny", overrides={key: value})
    assert str(refused.value) == message


@pytest.mark.parametrize(("overrides", "message"), [
    ({"task.noise_tokens": 0, "task.seq_len": 32},
     "task.noise_tokens=0: must be >= 1 when task.seq_len=32 > 3 leaves positions for noise"),
    ({"task.noise_tokens": 2, "task.seq_len": 3},
     "task.noise_tokens=2: has no effect: task.seq_len=3 leaves no position for noise "
     "(subject, relation, EOS); allowed: 0, or task.seq_len > 3"),
    ({"flow.method": "sliding"},
     "flow.method='sliding': integrates the ε = 0 sign flow only (not flow.geometry='euclidean', "
     "flow.geometry_eps=0.0, flow.modified_lr=0.0); allowed: flow.geometry=sign with flow.geometry_eps=0, "
     "or another method"),
])
def test_the_refusals_that_tie_two_keys_name_the_key_refused(overrides, message):
    with pytest.raises(ConfigError) as refused:
        resolve_config("tiny", overrides=overrides)
    assert str(refused.value) == message


EMBEDDED = {"model.kind": "embedded"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.embeddings": "orthonormal", "model.dim": 4},
     "model.dim=4: orthonormal embeddings need dim >= max(vocabulary 10, answers 4)"),
    ({"model.embeddings": "onehot", "model.dim": 4},
     "model.dim=4: onehot embeddings need dim >= max(vocabulary 10, answers 4)"),
    ({"model.embeddings": "hadamard", "model.dim": 24},
     "model.dim=24: hadamard embeddings need dim a power of 2 >= max(vocabulary 10, answers 4), e.g. 16"),
    ({"model.embeddings": "gaussian", "model.dim": 64},
     "loss.kind='population': the population loss is exact only for orthonormal embeddings; "
     "allowed: loss.kind=sampled"),
    ({"model.embeddings": "onehot", "model.dim": 64, "model.seed": 3},
     "model.seed=3: has no effect here: model.embeddings='onehot' are not drawn (orthonormal or gaussian "
     "are); allowed: 0 (the default)"),
])
def test_the_embedded_models_refusals_name_the_key_and_what_would_do(overrides, message):
    with pytest.raises(ConfigError) as refused:
        resolve_config("tiny", overrides={**EMBEDDED, **overrides})
    assert str(refused.value) == message


def test_an_unread_train_key_is_refused_with_what_would_make_it_read():
    from dynamics.config.loading import refuse_unread

    with pytest.raises(ConfigError) as untrained:
        refuse_unread(resolve_config("tiny", overrides={"train.lr": 0.3}), train=False,
                      explicit={"train.lr": "0.3"})
    assert str(untrained.value) == ("train.lr=0.3: has no effect: nothing is trained without --train "
                                    "(Python: train=True); allowed: add --train, or leave it out")
    adam = resolve_config("tiny", overrides={"train.optimizer": "adam", "train.momentum": 0.5})
    with pytest.raises(ConfigError) as unread:
        refuse_unread(adam, train=True, explicit={"train.momentum": "0.5"})
    assert str(unread.value) == ("train.momentum=0.5: has no effect: only muon reads it (train.optimizer="
                                 "'adam'); allowed: leave it out, or an optimizer reading it")


def test_an_unknown_preset_is_refused_naming_every_preset():
    from dynamics.config.presets import PRESETS

    with pytest.raises(ConfigError) as refused:
        resolve_config("nope")
    assert str(refused.value) == "--preset='nope': must be one of " + ", ".join(PRESETS)
    assert "tiny, " in str(refused.value)
