"""Media: SDP, RTP/RTCP, codecs, the MediaPlane interface (plane.py) and the embedded relay."""
