"""The pure core: values, codec, capabilities, machines and the network. No I/O here."""
