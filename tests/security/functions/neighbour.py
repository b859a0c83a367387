"""The well-behaved neighbour: answers the sha256 of the body, all suite long."""

import hashlib


def handle(event, context):
    return hashlib.sha256(event.body).hexdigest()
