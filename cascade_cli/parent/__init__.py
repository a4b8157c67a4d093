"""The parent: HTTP app, dispatch, claims, scheduler, reaper and notifier."""
