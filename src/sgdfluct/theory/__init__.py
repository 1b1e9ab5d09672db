"""sgdfluct.theory"""
