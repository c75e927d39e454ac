"""Mobile group: the app files of a challenger, proven before it can become the champion."""
