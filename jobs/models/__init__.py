"""Models by name (registry.py, project nets in nets.py), model surgery (surgery.py). The stage
package lists the registry as the `models` catalog (jobs/stages/__init__.py); trained models come
back through jobs/training/trained.py."""
