"""The adapters' side of a param tree: which leaves they are, their init, merge and mask.

Adapters live in the decoder's own param tree, beside the kernel they adapt
(`layers_3/self_attn/q_proj/{kernel, lora_a, lora_b}`), so every `Decoder.apply` runs them and
a config with `lora_rank=0` ignores them (the KL reference: the same tree, adapters off). The
trainer differentiates and updates only the adapter leaves (`trainable`), checkpoints only them
(`split`), and the frozen base is loaded from the model path at start-up and checked against the
checkpoint's `fingerprint`.
"""

from __future__ import annotations

import hashlib
import jax
import jax.numpy as jnp
import numpy as np

from gtalign.adapters import quant
from gtalign.models.config import ModelConfig
from gtalign.rl import train_state
from gtalign.utils.errors import InvalidInput

ADAPTER_LEAVES = ("lora_a", "lora_b")
SHORT_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
               "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def parse_targets(spec: str) -> tuple[str, ...]:
  """"all", or a comma list of q, k, v, o, gate, up, down (or their `_proj` names)."""
  if spec.strip() == "all":
    return tuple(SHORT_NAMES.values())
  names = []
  for part in (p.strip() for p in spec.split(",") if p.strip()):
    name = SHORT_NAMES.get(part, part)
    if name not in SHORT_NAMES.values():
      raise InvalidInput(f"model.lora.targets={spec!r}: unknown projection {part!r}; expected "
                         f"'all' or a comma list of {', '.join(SHORT_NAMES)}")
    names.append(name)
  if not names:
    raise InvalidInput(f"model.lora.targets={spec!r}: names no projection")
  return tuple(dict.fromkeys(names))


def check(lora_cfg, base_quant: str) -> None:
  """The run's `model.lora` ({rank, alpha, targets}) and `model.base_quant`, checked before
  anything loads; a quantized base needs adapters (nothing else could train)."""
  if base_quant not in quant.KINDS:
    raise InvalidInput(f"model.base_quant={base_quant!r}; expected one of "
                       f"{', '.join(quant.KINDS)}")
  rank = lora_cfg.rank
  if not isinstance(rank, int) or rank < 0:
    raise InvalidInput(f"model.lora.rank={rank!r}; expected an integer >= 0 (0: no adapters)")
  if base_quant != "none" and not rank:
    raise InvalidInput(f"model.base_quant={base_quant!r} freezes the base and needs adapters "
                       "to train: set model.lora.rank > 0")
  if rank:
    if float(lora_cfg.alpha) <= 0:
      raise InvalidInput(f"model.lora.alpha={lora_cfg.alpha}; expected > 0")
    parse_targets(lora_cfg.targets)


def configure(model_config: ModelConfig, lora_cfg, base_quant: str) -> ModelConfig:
  """The model config with the run's adapters and base storage (see `check`)."""
  check(lora_cfg, base_quant)
  if not lora_cfg.rank:
    return model_config
  return model_config.replace(lora_rank=int(lora_cfg.rank), lora_alpha=float(lora_cfg.alpha),
                              lora_targets=parse_targets(lora_cfg.targets),
                              base_quant=base_quant)


def enabled(model_config: ModelConfig) -> bool:
  return model_config.lora_rank > 0


def plain(model_config: ModelConfig) -> ModelConfig:
  """The same decoder without adapters or quantized storage (what a merged tree runs on)."""
  return model_config.replace(lora_rank=0, lora_targets=(), base_quant="none")


def adapters_off(model_config: ModelConfig) -> ModelConfig:
  """The base alone, on its stored (possibly quantized) weights: the KL reference."""
  return model_config.replace(lora_rank=0, lora_targets=())


def is_adapter(path: str) -> bool:
  return path.rsplit("/", 1)[-1] in ADAPTER_LEAVES


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _nest(items) -> dict:
  out: dict = {}
  for path, value in items:
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def split(params) -> tuple[dict, dict]:
  """(base, adapters): two nested dicts that `join` puts back together."""
  items = list(_flatten(dict(params)))
  return (_nest((p, v) for p, v in items if p[-1] not in ADAPTER_LEAVES),
          _nest((p, v) for p, v in items if p[-1] in ADAPTER_LEAVES))


def select(params, mask) -> tuple[dict, dict]:
  """(the leaves `mask` marks, the rest), as two nested dicts `join` puts back together."""
  flags = dict(_flatten(dict(mask)))
  items = list(_flatten(dict(params)))
  return (_nest((p, v) for p, v in items if flags[p]),
          _nest((p, v) for p, v in items if not flags[p]))


def trained_part(state, mask):
  """The part of a train state a checkpoint holds: with adapters (`mask`, the trainable
  mask), only the params the mask trains; without (`mask=None`), the whole state."""
  if state is None or mask is None:
    return state
  return state.replace(params=select(state.params, mask)[0])


def with_trained_part(state, restored, mask):
  """`state` with a restored `trained_part` put back (the frozen base is `state`'s own)."""
  if mask is None:
    return restored
  return restored.replace(params=join(select(state.params, mask)[1], restored.params))


def join(base, adapters) -> dict:
  return _nest(list(_flatten(dict(base))) + list(_flatten(dict(adapters))))


def abstract_params(model_config: ModelConfig):
  """The param tree's shapes and dtypes (no weights)."""
  from gtalign.models.transformer import Decoder  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  tokens = jnp.zeros((1, 1), jnp.int32)
  return nn.unbox(jax.eval_shape(lambda r: Decoder(model_config).init(r, tokens, tokens),
                                 jax.random.PRNGKey(0))["params"])


def init_adapters(model_config: ModelConfig, rng: jax.Array) -> dict:
  """Fresh adapters (host arrays): A as the decoder initialises it, B zero."""
  from gtalign.models.transformer import lora_a_init  # pylint: disable=g-import-not-at-top
  _, shapes = split(abstract_params(model_config))
  leaves = []
  for i, (path, leaf) in enumerate(sorted(_flatten(shapes))):
    if path[-1] == "lora_a":
      value = lora_a_init(jax.random.fold_in(rng, i), leaf.shape, jnp.float32)
    else:
      value = jnp.zeros(leaf.shape, jnp.float32)
    leaves.append((path, np.asarray(value)))
  return _nest(leaves)


def attach(model_config: ModelConfig, base_params, rng: jax.Array) -> dict:
  """The trainer's tree: the base (its projections quantized when configured) and fresh
  adapters."""
  base = quant.quantize_params(base_params, model_config.base_quant)
  return join(base, init_adapters(model_config, rng))


def merge(model_config: ModelConfig, params, dtype=None) -> dict:
  """The plain decoder's tree: each adapted kernel becomes W + (alpha / r) A B, each quantized
  one its dequantized value; `dtype` (default the config's param dtype) for every leaf. Runs
  under jit (the sampler's weights once per RL step) or eagerly (an export)."""
  dtype = jnp.dtype(dtype or model_config.param_dtype)
  shapes = dict(_flatten(abstract_params(plain(model_config))))
  scale = model_config.lora_alpha / max(model_config.lora_rank, 1)
  nodes = dict(_flatten(dict(params)))
  out = []
  for path, leaf in shapes.items():
    if path in nodes:
      value = jnp.asarray(nodes[path], jnp.float32)
    else:  # a quantized kernel
      owner = path[:-1]
      absmax = nodes[owner + ("kernel_absmax",)]
      value = quant.dequantize(nodes[owner + ("kernel_codes",)], absmax, jnp.float32)
    a = nodes.get(path[:-1] + ("lora_a",)) if path[-1] == "kernel" else None
    if a is not None:
      b = nodes[path[:-1] + ("lora_b",)]
      delta = jnp.asarray(a, jnp.float32) @ jnp.asarray(b, jnp.float32)
      value = value.reshape(delta.shape) + scale * delta
    out.append((path, value.reshape(leaf.shape).astype(dtype)))
  return _nest(out)


def trainable(params, mode: str):
  """With adapters, only adapter leaves train; `mode` (rl.trainable) may narrow them to the
  blocks it names ("top_k_blocks:N")."""
  blocks = train_state.trainable_mask(params, mode)
  return jax.tree_util.tree_map_with_path(
      lambda p, t: bool(t) and is_adapter(train_state.path_str(p)), blocks)


def fingerprint(base_params) -> str:
  """A short hash of the frozen base: every leaf's path, shape and dtype, and a strided sample
  of its values (a full hash of a 3B base would take longer than loading it)."""
  digest = hashlib.sha256()
  for path, leaf in sorted(_flatten(dict(base_params))):
    arr = np.asarray(leaf)
    digest.update(f"{'/'.join(path)}:{arr.shape}:{arr.dtype};".encode())
    flat = arr.reshape(-1)
    digest.update(np.ascontiguousarray(flat[::max(1, flat.size // 4096)]).tobytes())
  return digest.hexdigest()[:16]


def count(tree) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(tree)))


def describe(model_config: ModelConfig, params) -> str:
  """One log line: adapter and base sizes."""
  base, adapters = split(params)
  quant_note = f", base {model_config.base_quant}" if model_config.base_quant != "none" else ""
  return (f"gtalign: LoRA rank {model_config.lora_rank} alpha {model_config.lora_alpha:g} on "
          f"{','.join(n.removesuffix('_proj') for n in model_config.lora_targets)}: "
          f"{count(adapters):,} adapter parameters train, {count(base):,} base values "
          f"frozen{quant_note}")


def resume_meta(model_config: ModelConfig, base_params) -> dict:
  """What a checkpoint records of the adapters' setting, checked on resume (`check_resume`):
  the base's fingerprint and the adapters' rank, alpha and targets (alpha changes no shape, so
  the restore itself would not notice it)."""
  return {"base_fingerprint": fingerprint(base_params),
          "adapters": {"rank": model_config.lora_rank, "alpha": model_config.lora_alpha,
                       "targets": list(model_config.lora_targets)}}


def check_resume(stored: dict, current: dict, where: str, model_name: str) -> None:
  """One-line InvalidInput when a checkpoint's adapters were trained on another base or with
  another setting than this run's (a checkpoint without the record, from a run without
  adapters, is left to the shape check)."""
  base = stored.get("base_fingerprint")
  if base is not None and base != current["base_fingerprint"]:
    raise InvalidInput(f"checkpoint {where} holds adapters trained on another base (base "
                       f"fingerprint {base}, model.name={model_name!r} gives "
                       f"{current['base_fingerprint']}); load the base it was trained on, or "
                       "use another --workdir")
  setting = stored.get("adapters")
  if setting is not None and setting != current["adapters"]:
    raise InvalidInput(f"checkpoint {where} holds adapters of rank {setting['rank']}, alpha "
                       f"{setting['alpha']:g} on {','.join(setting['targets'])}; this config "
                       f"asks for rank {current['adapters']['rank']}, alpha "
                       f"{current['adapters']['alpha']:g} on "
                       f"{','.join(current['adapters']['targets'])} (model.lora); use another "
                       "--workdir")
