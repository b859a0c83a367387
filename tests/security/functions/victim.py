"""Another tenant's function; its code holds a token no other function may read."""

import os

TOKEN = "@TOKEN@"


def handle(event, context):
    return {"code_dir": os.path.dirname(os.path.abspath(__file__)), "token": TOKEN}
