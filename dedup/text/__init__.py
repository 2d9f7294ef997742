"""Text near-duplicates: the normalised forms every text space and the text verifier share."""

from dedup.text.normalize import FORM_VERSION, aggressive_form, match_form

__all__ = ["FORM_VERSION", "aggressive_form", "match_form"]
