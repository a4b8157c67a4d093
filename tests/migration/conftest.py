from tests.foundation.conftest import clean_env, cli, parent_dir  # noqa: F401
