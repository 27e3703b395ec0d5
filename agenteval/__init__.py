"""Agent evaluation on replayed markets: ``runner`` (the service behind ``manage.py evaluate_agent``) and the dashboard pages."""
