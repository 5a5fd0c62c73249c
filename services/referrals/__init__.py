"""The referrals service: the hub's front door for clinic submissions and referral lifecycles.

Layout: ``domain`` (pure rules), ``adapters`` (KV), ``handlers`` (thin
subscriber logic), ``app`` (wiring).
"""
