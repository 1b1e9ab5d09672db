"""sgdfluct.analysis"""
