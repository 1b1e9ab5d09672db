"""sgdfluct.experiments"""
