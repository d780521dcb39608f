% rebase('base', title='Log in with your link', user=None)
<section class="login-card">
  <h1>Log in to your gallery</h1>
  % if message:
  <p class="error" role="alert">{{message}}</p>
  % end
  % if generation_id:
  <p>This link logs you in as <strong>{{link_user}}</strong> and opens generation <code>{{generation_id}}</code>.</p>
  % else:
  <p>This link logs you in as <strong>{{link_user}}</strong>.</p>
  % end
  <form method="post" class="login-form">
    <input type="hidden" name="csrf_token" value="{{csrf}}">
    <button type="submit" class="primary">Log in as {{link_user}}</button>
  </form>
  <p class="help">A link works once: after this button, ask for a new link or use your access code.
    It needs this button because mail scanners open links to check them, and must not use it up.</p>
</section>
