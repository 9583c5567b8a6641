"""attnkit.tasks: the glue of each task (data + model + loss + metrics + predict) on the one engine."""
