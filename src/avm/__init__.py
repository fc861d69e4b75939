"""avm: networks of Abstract Virtual Machines."""
