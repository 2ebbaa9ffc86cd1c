"""The generated ``camshaft.v1`` messages and gRPC stubs.

Every ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` here is generated from
the repository's ``proto/camshaft/v1/*.proto`` by ``clients/python/generate.sh``;
do not edit them. The ``.proto`` files document every field, its default and
the status code of each failure.
"""
