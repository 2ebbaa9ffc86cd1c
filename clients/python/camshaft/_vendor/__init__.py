"""Generated data the SDK ships: ``google_rpc.binpb``, the descriptor set of
the vendored ``google.rpc`` protos (``clients/python/proto``), written by
``generate.sh``."""
