"""A Tornado HTTP front door for the clip_grpc server.

The bridge owns no model: every HTTP request becomes one gRPC call to the server over one
shared channel. `make_app(config, backend)` in `rest_bridge.app` builds the application.
"""
