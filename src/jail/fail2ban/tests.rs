//! Unit tests of the fail2ban filter reader.
