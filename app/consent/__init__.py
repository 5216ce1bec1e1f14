"""The consent service: every status change of a number goes through it, behind the
number's lock.
"""
