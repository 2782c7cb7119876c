"""A fleet's security material and what it secures: the fleet CA and the broker's certificate
(pki), one credential per principal (principals), the broker's authorisation rules (acl), and
the files all of it lives in, readable by their owner only (files)."""
