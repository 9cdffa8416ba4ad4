"""The settings: one pydantic-settings model (TOML file + I2V_* environment), the checks that span
several settings, where each value came from, and configuration errors in plain words."""
