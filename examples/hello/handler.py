"""The smallest useful faasbox function (and the warm-path benchmark target).

curl 'http://127.0.0.1:8080/function/hello?name=Ada'
"""


def handle(event, context):
    name = event.query.get("name")
    if name:
        return f"Hello, {name}, from faasbox!"
    return "Hello from faasbox!"
