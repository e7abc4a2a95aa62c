"""Frontdesk's tools, in layers (each imports only the ones above it):

- errors: ToolError, a failure worded for the caller.
- domain/: the business and its rules, slots, dates in callers' words, spoken forms, and the
  phone-number and time-zone rules. No I/O.
- store/: the database (engine, schema, migrations) and the SQL for each kind of record; the
  one place SQL dialects differ.
- registry: ToolContext, ToolSpec and the registry that runs a tool safely.
- actions/: the agent's tools, thin typed adapters over the domain and the store.
- catalog: the tools, listed explicitly, and the registry of the ones a call may use.
- admin/: the admin console's request models, sign-in, views, changes and review lists.

No web framework and no pipecat here.
"""
