% rebase('base', title=title)
<section class="ask-card">
  <h1>Delete this generation?</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  % end
  <blockquote class="prompt-quote">{{gen['prompt']}}</blockquote>
  % if running:
  <p>It is being made right now, so it cannot be deleted yet. Wait for it to finish, then delete it.</p>
  <p><a href="/g/{{gen['id']}}">Back to it</a></p>
  % else:
  <p>This removes its {{files}} file{{'' if files == 1 else 's'}} and its record for good. It cannot be undone.
    (From a shell: <code>aigen delete {{gen['id']}}</code>.)</p>
  <form method="post" action="/g/{{gen['id']}}/delete" class="confirm-form">
    <input type="hidden" name="csrf_token" value="{{csrf}}">
    <button type="submit" class="primary danger">Delete for good</button>
    <a href="/g/{{gen['id']}}">Cancel</a>
  </form>
  % end
</section>
