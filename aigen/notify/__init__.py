"""Notifications: when to tell a user that their generation is ready, how, and the daemon that does it.

when.py parses --notify-at; queue.py keeps the per-channel rows and their
claims in the database; message.py writes the notice; desktop.py, mail.py
send it; daemon.py plans, claims and delivers, once per step or in a loop.
"""

import logging

# A library stays quiet unless the application configures logging (the
# notify daemon does); without this, Python's last-resort handler would print
# warnings into `aigen generate --json` output.
logging.getLogger("aigen.notify").addHandler(logging.NullHandler())
