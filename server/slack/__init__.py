"""The Slack app: request messages in a channel, updated in place (``blocks``, ``sinks``),
direct messages to the requester (``sinks``), and approvals from verified interactions
(``interactions``). ``settings`` is the ``[slack]`` table.

Nothing is imported here: :mod:`server.config` imports ``server.slack.settings`` (standard
library only), and the CLI imports the configuration without Flask or slack-sdk.
"""
