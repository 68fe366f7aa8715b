"""Built-in presets and the GPU catalog (YAML data, shipped in the wheel as qcli.configs)."""
