"""Media: SDP and RTP. Only what the placeholder agent needs lives here so far."""
