"""Full-duplex chat: backends, the websocket server and its web page."""
