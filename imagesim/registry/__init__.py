"""The registry half of imagesim: an OCI distribution server (``server``, over ``storage``,
with ``auth``) and a docker-like client (``client``: push, pull, login)."""
