"""The entry layer: the `osteo` command and its command modules (the only code that imports flows)."""
