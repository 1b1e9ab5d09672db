"""sgdfluct.plotting"""
