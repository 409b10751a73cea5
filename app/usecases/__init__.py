"""Use cases over several stores: offline delivery (inbox, feeds, groups), the sinks of
`imflow.messages`, sync (inbox + feeds), replay. They import the core and the stores,
never the web or the agents."""
