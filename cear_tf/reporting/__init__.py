"""Reading what runs wrote: certify logs, certified accuracy, paired tests, the paper's tables and claims."""
