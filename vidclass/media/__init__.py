"""Getting videos in: downloads (with the connect-time network guard) and frame decoding and sampling."""
