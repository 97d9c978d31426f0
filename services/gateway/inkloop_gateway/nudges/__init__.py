"""What the product learns from behaviour and puts back on the page: prompt templates and experiments.

`templates` holds the shipped catalog and each tenant's own templates (requests name one by id);
`experiments` holds each tenant's experiments and assigns visitors to their arms. Analytics ranks the
templates and reads the experiments out; both books live here, in stores every replica shares.
"""
