"""Everything a person sees: argument parsing, menus, tables, colours, JSON."""
