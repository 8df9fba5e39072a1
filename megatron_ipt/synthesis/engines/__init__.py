def build_engine(name, **kwargs):
    """Engine by name; heavy engines are imported only when selected."""
    if name == "rules":
        from ..rules import RulesEngine
        return RulesEngine(**kwargs)
    raise ValueError(f"unknown or not yet implemented engine {name!r} (available: rules)")
