"""The supervised 2CONV benchmarks of the paper (section 4.1, Appendix B)."""
