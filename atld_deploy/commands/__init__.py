"""CLI commands, one module per stage, each registering on `atld_deploy.cli_app.app`."""
