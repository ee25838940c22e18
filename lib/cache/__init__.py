"""Pure cache simulations over block ids: TTL and prefix models, LRU/OPT capacity, the API's cache model."""
