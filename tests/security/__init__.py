"""The hostile-function suite: real attacks deployed and invoked through the gateway on
every isolating sandbox backend, with a well-behaved neighbour answering throughout."""
