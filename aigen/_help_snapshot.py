"""What `aigen --help` prints at 80 columns or more, and the fingerprint of the sources it was made
from. Written by `python -m aigen.fasthelp --write`: do not edit (see aigen/fasthelp.py)."""

FINGERPRINT = '22-163698-9fd10d7f'
TYPER_VERSION = '0.29.3'

TEXT = (
    'Usage: aigen [OPTIONS] COMMAND [ARGS]...\n'
    '\n'
    '  Turn one text prompt into videos and images with AI providers, keep every\n'
    '  request and file in a local SQLite store, notify you when they are ready,\n'
    '  and browse them in a local gallery.\n'
    '\n'
    '  With AIGEN_DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB (or [cluster]\n'
    '  database_url in HOME/config.toml) the store is that PostgreSQL database\n'
    '  instead.\n'
    '\n'
    '  The `local` provider needs no key and no network: it is a procedural\n'
    '  renderer for trying the system, not an AI model.\n'
    '\n'
    'Options:\n'
    '  --home DIR  Directory holding aigen.db and generated_content/ (default:\n'
    '              $AIGEN_HOME, else the per-user data directory).\n'
    '  --version   Print the version.\n'
    '  --help      Show this message and exit.\n'
    '\n'
    'Commands:\n'
    '  generate       Make videos and images from PROMPT into...\n'
    '  retry          Finish a Failed or interrupted generation: assets...\n'
    '  status         List generations (newest first) with their status and...\n'
    '  delete         Delete a generation for good: its files (in the home or...\n'
    "  export         Write a generation's made files and its prompt as one...\n"
    '  notify-daemon  Deliver due notifications: at their time, or as soon as...\n'
    '  providers      List the providers: what each makes, its default model,...\n'
    '  serve          Serve the gallery: log in with a user_id, watch the...\n'
    "  events         List the gallery's events, newest first: logins (ok or...\n"
    '  doctor         Check the home: the database (PRAGMA quick_check), every...\n'
    "  worker         Take asset jobs from the cluster's queues (cluster mode:...\n"
    '  cancel         Stop a queued or running generation everywhere (cluster...\n'
    '  keys           Store, list and remove provider API keys (kept in...\n'
    '  user           Gallery users: access codes for logging in when the...\n'
    '  cluster        Cluster mode: one aigen for a team, its store in...\n'
)
