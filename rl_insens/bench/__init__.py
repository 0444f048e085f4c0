"""The supervised 2CONV benchmarks of the paper (section 4.1, Appendix B).

``data`` loads the data sets, ``noise`` makes the noisy test images, ``training`` trains and
measures 2CONV, ``models`` keeps the trained models, ``figures`` draws the methods' maps,
``tables`` writes the reports, and ``supervised`` runs each benchmark seed by seed.
"""
