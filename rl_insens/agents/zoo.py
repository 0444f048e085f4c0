"""The rl-baselines3-zoo layout: the game and wrapper settings a zoo run trained with.

Next to a zip the zoo keeps ``<env id>/args.yml``, ``config.yml`` and ``env_kwargs.yml``;
they say the game and the wrapper settings, and they are read with YAML's safe loader.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..envs import AtariSettings, GameError, ale_ids

ZOO_FILES = ("args.yml", "config.yml", "env_kwargs.yml")
WRAPPER_SETTINGS = {"noop_max", "frame_skip", "screen_size"}
"""``AtariWrapper`` arguments that change what the agent sees. Not ``terminal_on_life_loss``: whole
games are scored unless the user asks otherwise."""


class _ZooLoader(yaml.SafeLoader):
    """YAML's safe loader, reading the zoo's ``OrderedDict`` tags as plain mappings."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    pairs = loader.construct_sequence(node.value[0], deep=True) if node.value else []
    return {key: value for key, value in pairs}


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_ZooLoader)  # safe-load: a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GameError(f"{path} is not readable YAML ({first}); pass --env to name the game") from None
    return data or {}


def zoo_folder(zip_path: Path) -> Path | None:
    """The zoo's ``<env id>/`` folder of settings next to a zip, if there is one."""
    folders = [p for p in zip_path.parent.iterdir()
               if p.is_dir() and any((p / name).exists() for name in ZOO_FILES)]
    named = [p for p in folders if p.name == zip_path.stem]
    return (named or folders or [None])[0]


def zoo_settings(zip_path: Path) -> AtariSettings | None:
    """The game and wrapper settings the zoo trained with, from the files next to the zip.

    The env id comes from ``args.yml``, else the folder's or the zip's name; ``config.yml``
    gives the ``AtariWrapper`` arguments and the frame stack; ``env_kwargs.yml`` may choose the
    full action set. Without any of these, ``None``.
    """
    folder = zoo_folder(zip_path)
    env_id = None
    if folder is not None:
        args = _read_yaml(folder / "args.yml") if (folder / "args.yml").exists() else {}
        env_id = args.get("env") or folder.name
    elif zip_path.stem in ale_ids():
        env_id = zip_path.stem
    if env_id is None or env_id not in ale_ids():
        return None
    settings: dict = {"preprocessing": "sb3"}
    if folder is not None and (folder / "config.yml").exists():
        config = _read_yaml(folder / "config.yml")
        settings.update(_wrapper_settings(config.get("env_wrapper")))
        if config.get("frame_stack"):
            settings["frame_stack"] = int(config["frame_stack"])
    if folder is not None and (folder / "env_kwargs.yml").exists():
        kwargs = _read_yaml(folder / "env_kwargs.yml")
        for key in ("full_action_space", "repeat_action_probability"):
            if key in kwargs:
                settings[key] = kwargs[key]
    return AtariSettings(env_id, **settings)


def _wrapper_settings(wrappers) -> dict:
    """``AtariWrapper``'s arguments in the zoo's ``env_wrapper`` (a name, a mapping, or a list)."""
    for item in wrappers if isinstance(wrappers, list) else [wrappers]:
        if isinstance(item, dict):
            for name, kwargs in item.items():
                if name.endswith("AtariWrapper"):
                    return {k: v for k, v in (kwargs or {}).items() if k in WRAPPER_SETTINGS}
    return {}
